"""The driver's side of a run: its pipeline of stages over every host, captures, clocks, gather, signals."""
