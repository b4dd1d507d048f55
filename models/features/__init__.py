"""The feature stage (torch): chips from a tile store through an encoder into a feature
table, streamed in batches, in parallel parts, with the table's file format."""
