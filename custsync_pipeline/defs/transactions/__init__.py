"""Transactions area: the web shop / POS lane (``transactions_sync``) as one asset."""
