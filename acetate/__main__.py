from acetate.pipeline.cli import main

raise SystemExit(main())
