"""What the tests, the benchmarks and the fault-injection run share to run the system:
real servers and real service processes, never imported by the services themselves."""
