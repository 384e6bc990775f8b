"""custsync: keeps customer data consistent across the systems a company runs."""

__version__ = "0.1.0"
