from discover_pkg.app import app


@app.task
def place(order_id: int) -> int:
    return order_id
