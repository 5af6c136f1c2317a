"""Run folders on disk: the original repository's layout and OpenLTH's, read and written in one place."""
