"""The state DB: SQLAlchemy Core tables for source records, identity, golden records, outbox/ledger, quarantine and watermarks."""
