"""The fault suite (make faults): real server and Redis processes under load, faults injected."""
