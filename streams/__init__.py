"""The log: topic names, Kafka plumbing, and the faust worker with its processors."""
