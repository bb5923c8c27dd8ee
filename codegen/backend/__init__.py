"""Back end: IR to Python statements, and the one module assembler every product uses."""
