# Image for compose.yaml: one image, run as the web server or as the monitor.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --system --uid 10001 vxlanmgr && mkdir -p /app/var && chown vxlanmgr /app/var
USER vxlanmgr
EXPOSE 8000
CMD ["sh", "-c", "python manage.py bootstrap && python manage.py serve --host 0.0.0.0 --port 8000 --monitor no"]
