"""The KVS emulator's tests, by area: operations, limits and faults, performance, wire conformance, admin and CLI."""
