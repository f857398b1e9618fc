"""Code shared by the task folders: the dataset loader their YAMLs name, answer parsing and the
batched program-execution filter. Not a task (task discovery skips names starting with `_`)."""
