"""The Textual dashboard (``iii tui``); imported only when it runs."""
