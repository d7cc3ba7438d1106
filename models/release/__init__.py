"""`appliance-release`: turn model files and their manifest entries into a signed TUF repository that any
static HTTP server can serve. docs/ota.md walks through keys, publishing, staged rollouts and halting."""
