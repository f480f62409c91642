"""What every entry point (the bot, the worker, the CLI) does the same way around its event loop:
quiet library logging, and leaving the loop with no task left behind."""
