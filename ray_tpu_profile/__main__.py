from ray_tpu_profile.cli import main

main()
