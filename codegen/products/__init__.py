"""Products: the files and reports a spec asks for (a model, a hybrid, a report, suggestions, exports)."""
