from lsqface.cli import main

raise SystemExit(main())
