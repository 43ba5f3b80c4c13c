"""shardmeans jobs end to end: options, CLI, the fit graph, readers and writers."""
