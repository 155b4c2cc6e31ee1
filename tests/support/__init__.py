"""What tests across the project share: real processes to run, ports, waiting, and machines to start from."""
