"""``python -m stroke_lesion_app`` runs the BIDS-App command line."""

from stroke_lesion_app.cli.run import main

if __name__ == "__main__":
    main()
