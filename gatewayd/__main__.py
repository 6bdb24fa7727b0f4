from gatewayd.app.cli import main

raise SystemExit(main())
