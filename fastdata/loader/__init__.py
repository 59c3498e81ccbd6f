"""The training-side glue: TokenDataset, batch assembly, the stateful DataLoader."""
