"""Parcel-screening gateway: ingest, storage and three-100% compliance."""

__version__ = "0.1.0"
