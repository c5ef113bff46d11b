from ekd_edge.cli import main

raise SystemExit(main())
