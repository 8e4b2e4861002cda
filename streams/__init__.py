"""The log: topic names, Kafka plumbing, the batch runtime and its loops, and the faust worker."""
