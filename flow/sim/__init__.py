"""RTL simulation, validation against FINN and PyTorch, and synthesis of a build."""
