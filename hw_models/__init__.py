"""What the hardware is and does: boards, resource and cycle models, simulators."""
