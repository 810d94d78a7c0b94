"""banger.vmm."""
