# jupyter_cifar: JupyterLab with the app, for `docker compose up` (see docker-compose.yml).
FROM python:3.11-slim

COPY . /opt/jupyter_cifar
RUN bash /opt/jupyter_cifar/docker/install.sh /opt/jupyter_cifar \
    && useradd --create-home --uid 1000 jovyan \
    && mkdir -p /home/jovyan/work \
    && cp -r /opt/jupyter_cifar/examples /home/jovyan/work/examples \
    && chown -R jovyan /home/jovyan/work

USER jovyan
WORKDIR /home/jovyan/work
EXPOSE 8888
# The log prints the URL with its token: that is all a user needs.
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/home/jovyan/work"]
