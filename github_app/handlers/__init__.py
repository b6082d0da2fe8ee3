"""One router per webhook topic; github_app.app merges them."""
