"""Installing and inspecting banger as two system services (bangerd + banger-helper)."""
