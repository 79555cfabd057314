"""Storage errors.

StorageError
├── MigrationError         the schema could not be brought up to date
└── DatabaseUnavailableError  the database failed mid-operation; nothing was committed
"""


class StorageError(Exception):
    """Base of storage failures."""


class MigrationError(StorageError):
    """Migrations are inconsistent or could not be applied."""


class DatabaseUnavailableError(StorageError):
    """The database failed; the operation was rolled back."""


class UnstorableEventError(StorageError):
    """PostgreSQL refused a value of the request (a data error); retrying will not help."""
