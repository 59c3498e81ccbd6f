"""Pure planning: which sample goes where, as functions of (dataset, seed, epoch, settings).

Nothing here does I/O, touches torch or the native module: the sample order can be
tested exhaustively without processes.
"""
