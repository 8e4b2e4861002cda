"""Read models built from `evidence.events`: pure folds plus their RocksDB stores."""
