"""Imported by the multiprocessing forkserver of a run as it starts (``set_forkserver_preload``):
the forkserver then dies with the main process, and its workers with it (:mod:`.supervision`)."""

from stroke_lesion_app.cli.lifetime import die_with_parent

die_with_parent()
