"""Administration of accounts: list and search users, change their role or standing, export, delete."""
