"""The command-line shell the scripts share (the verbs' own layer, on top of every other): argument types,
exit codes, error lines, progress bars and tables on the terminal. The only code besides the scripts that
writes to stdout or stderr; no other layer of shared/ imports it."""
