"""The leaderboard's pages: each file is a Streamlit page script that `leaderboard/app.py` routes to."""
