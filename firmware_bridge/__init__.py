"""Firmware bridge: scanner line-scan protocol, parcel image assembly, store-and-forward uplink."""
