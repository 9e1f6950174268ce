"""The supervisor: lifecycle of regions, liveness of processes; its client and wire format."""
