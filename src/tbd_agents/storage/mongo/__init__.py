"""MongoDB backend of the storage protocol (pymongo async API); see docs/storage-mongo.md."""
