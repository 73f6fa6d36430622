"""The application layer: train, compare and sweep as library functions, each owning its
whole path (checks, one data load, execute, tables, report); every front door calls them."""
