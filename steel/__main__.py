from steel.cli import main

raise SystemExit(main())
