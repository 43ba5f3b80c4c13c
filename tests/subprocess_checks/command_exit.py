"""`shardmeans no-such-command` through pipeline.cli.run(), which ends the process with
os._exit, after a thread still running, an exit handler and buffered output: the test
reads what this prints and the status it exits with."""

import atexit
import sys
import threading
import time

atexit.register(lambda: print("handler ran"))
threading.Thread(target=lambda: (time.sleep(0.5), print("thread done"))).start()
sys.argv = ["shardmeans", "no-such-command"]
print("buffered", end=" ")

from pipeline.cli import run  # noqa: E402 -- once the scene is set

run()
