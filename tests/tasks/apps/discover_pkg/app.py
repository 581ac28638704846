from brokerd_client.tasks import App

app = App("discover")
app.autodiscover_tasks(["discover_pkg.orders", "discover_pkg.empty"])
