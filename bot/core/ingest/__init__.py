"""Reading what an admin uploads: every file format, huggingtweets' cleaning, Discord data packages and
`url:` downloads, ending in one `IngestResult` (the posts kept and what was dropped)."""
