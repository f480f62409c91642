"""One cog per slash-command group; each validates its options and calls the service."""
