"""Streamlit helpers for the app's pages (the only place in the package that imports streamlit)."""
