"""A library-loan system written from the README only (cli6's stranger test app)."""
