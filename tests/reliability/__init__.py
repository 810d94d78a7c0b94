"""The reliability and security suite: hostile input, peer credentials, crash recovery."""
