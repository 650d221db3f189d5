from stylegen_trt.cli import main

main()
