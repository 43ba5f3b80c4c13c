"""Imported first by every local SDK worker (--direct_running_mode=multi_processing), as a
Beam plugin (--beam_plugins, set by pipeline.private_apis.fn_api_runner).

A worker inherits the command's environment, TF_CPP_MIN_LOG_LEVEL included, and
its stderr is the command's: TensorFlow is imported here, before any of the job's
code is loaded, without the start-up lines that level should hide (pipeline.logs).
"""

from pipeline import logs

logs.import_tensorflow()
