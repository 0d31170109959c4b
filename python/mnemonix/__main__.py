from mnemonix.cli import main

raise SystemExit(main())
