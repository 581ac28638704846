accept_content = ["json", "pickle"]
